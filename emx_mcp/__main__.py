from emx_mcp.cli import main

raise SystemExit(main())
