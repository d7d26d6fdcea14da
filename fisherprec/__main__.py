import sys

from fisherprec.cli import main

sys.exit(main())
