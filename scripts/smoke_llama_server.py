"""Smoke-test a llama-server binary on GGUF models: a real short generation
each (pytest_mxfp4/servers/smoke.py; stdlib only, so it runs before any
package is installed).

    python scripts/smoke_llama_server.py BIN/llama-server MODEL.gguf [MODEL.gguf ...]

Exit 0: every model generated; 3: the server died by a signal (a build/CPU
mismatch: scripts/build_llama_server.sh then rebuilds with the safe feature
set); 4: any other failure.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pytest_mxfp4.servers.smoke import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
