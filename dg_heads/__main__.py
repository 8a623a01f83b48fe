from dg_heads.cli import main

main()
