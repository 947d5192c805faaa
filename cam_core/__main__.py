import sys

from cam_core.cli import main

sys.exit(main())
