"""Nothing in the suite phones home: set the switches of libraries that check for updates at import.

albumentations 2.0 asks PyPI for its latest version when imported (on an offline machine it prints
``Error fetching version info <urlopen error ...>`` and waits on the network); ``NO_ALBUMENTATIONS_UPDATE=1``
turns that off. Imported by the ``shared``, ``domains`` and ``apps`` packages, so it runs before any of them
imports albumentations. A value the user set is kept.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
