"""Entry point of the remask_egspo plugin: registers its components with remask."""

from __future__ import annotations

import remask
