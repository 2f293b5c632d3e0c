"""jobchain-dictstore: an example backend plugin for jobchain, served by URL ``dictstore://``."""

from jobchain_dictstore.backend import DictStoreBackend

__all__ = ["DictStoreBackend"]
