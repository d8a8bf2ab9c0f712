import sys

from modelserve.cli import main

sys.exit(main())
