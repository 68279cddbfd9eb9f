from quanyi.cli import main

raise SystemExit(main())
