"""`python -m joblet_agent.node`: the node side's entry point."""

import sys

from .main import main

sys.exit(main())
