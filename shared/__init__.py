"""Domain-free building blocks: backbones, the Lightning CLI and base task, data helpers, export."""

import shared.offline  # noqa: F401 - before anything imports albumentations
