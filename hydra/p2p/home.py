"""Where a node keeps its state: ``$HYDRA_HOME`` (default ``~/.openhydra``) and the identity
key file in it. Kept apart from ``identity`` so that the CLI can name these paths without
importing libp2p (which takes most of a second)."""

import os
from pathlib import Path

KEY_FILE = "identity.key"


def default_home() -> Path:
    return Path(os.environ.get("HYDRA_HOME", Path.home() / ".openhydra")).expanduser()
