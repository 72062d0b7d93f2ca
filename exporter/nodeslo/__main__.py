from nodeslo.cli import main

raise SystemExit(main())
