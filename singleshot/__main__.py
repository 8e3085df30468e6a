import sys

from singleshot.cli import main

sys.exit(main())
