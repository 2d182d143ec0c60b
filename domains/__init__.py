"""The suite's domains: ``domains.medical`` and ``domains.driving``."""

import shared.offline  # noqa: F401 - before anything imports albumentations
