from batond.commands.cli import main

raise SystemExit(main())
