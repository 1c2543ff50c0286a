from minicni.plugin.main import main

main()
