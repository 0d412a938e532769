"""``python -m stillmotion.bench``: see stillmotion.bench.run."""

from __future__ import annotations

import sys

from stillmotion.bench.run import main

sys.exit(main())
