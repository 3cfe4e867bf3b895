from batond.cli import main

raise SystemExit(main())
