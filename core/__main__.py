from biblioedge.cli import main

raise SystemExit(main())
