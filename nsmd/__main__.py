from nsmd.cli.main import main

raise SystemExit(main())
