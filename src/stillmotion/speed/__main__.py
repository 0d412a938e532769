"""``python -m stillmotion.speed``: the issue-5 UNet step benchmark (speed/bench.py)."""

from stillmotion.speed.bench import main

raise SystemExit(main())
