from minicni.main import main

main()
