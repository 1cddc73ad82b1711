import sys; print("report placeholder", sys.argv)
