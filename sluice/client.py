"""`sluice.client` as named in the contract: the client lives in `sluice.edge.client`."""

from sluice.edge.client import SluiceClient, SluiceTimeout

__all__ = ["SluiceClient", "SluiceTimeout"]
