from smartthumb.runner.cli import main

raise SystemExit(main())
