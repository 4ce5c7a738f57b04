from panst3r_engine.cli import main

raise SystemExit(main())
