"""Test set-up: offline, a private model cache, and no network at all."""

import os
import socket

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


class NetworkBlocked(RuntimeError):
    pass


_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("/"):
        raise NetworkBlocked(f"test tried to reach the network: {address}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True, scope="session")
def _no_network_and_private_cache(tmp_path_factory):
    os.environ["REGIONEDIT_CACHE"] = str(tmp_path_factory.mktemp("regionedit-cache"))
    socket.socket.connect = _guarded_connect
    yield
    socket.socket.connect = _real_connect


@pytest.fixture(autouse=True)
def _seeded_draws():
    """Every test starts from the same global random state, whatever ran before it (the suite passes
    in any order: `pytest -p random_order --random-order`)."""
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def pixel_model():
    from regionedit.models import load_model

    return load_model("tiny/pixel-ddpm", device="cpu")


@pytest.fixture(scope="session")
def sd_model():
    from regionedit.models import load_model

    return load_model("tiny/sd", device="cpu")


@pytest.fixture(scope="session")
def ip2p_model():
    from regionedit.models import load_model

    return load_model("tiny/ip2p", device="cpu")


@pytest.fixture
def photo():
    """A 64×64 crop of scikit-image's astronaut photo (bundled with the package, no download)."""
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((64, 64), Image.Resampling.LANCZOS)
