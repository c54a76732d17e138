"""`python -m fgd`: see fgd.cli."""
from fgd.cli import main

raise SystemExit(main())
