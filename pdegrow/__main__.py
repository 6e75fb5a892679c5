import sys

from pdegrow.cli import main

sys.exit(main())
