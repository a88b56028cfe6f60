"""`python -m mphub`: see `mphub.cli`."""

import sys

from .cli import main

sys.exit(main())
