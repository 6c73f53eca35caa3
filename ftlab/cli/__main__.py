"""`python -m ftlab.cli`: the ftlab command, as the console script `ftlab` runs it."""
import sys

from ftlab.cli.main import main

sys.exit(main())
