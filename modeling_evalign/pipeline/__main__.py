"""``python -m modeling_evalign.pipeline``: run the main job."""

from modeling_evalign.pipeline.job import main

raise SystemExit(main())
