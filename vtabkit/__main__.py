"""`python -m vtabkit` is the `vtabkit` command."""

import sys

from vtabkit.cli import main

sys.exit(main())
