"""The trainer's key pair for this run: the models the tests register are signed with it, and the
functions they start trust its public half (tests/functions/conftest.py passes it on).

A module of its own so that there is one pair: pytest loads ``tests/conftest.py`` as ``conftest``
and the tests import it as ``tests.conftest``, two modules, while this one is only ever
``tests.signing_keys``."""

import os

from pefm.config import get_settings
from pefm.storage.signing import generate

SIGNING_KEY, VERIFY_KEYS = generate()
os.environ["PEFM_SIGNING_KEY"], os.environ["PEFM_VERIFY_KEYS"] = SIGNING_KEY, VERIFY_KEYS
get_settings.cache_clear()
