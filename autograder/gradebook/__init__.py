"""The class gradebook: each submission recorded and read back (``grades``), the students'
feedback pages (``feedback``) and the CSV files written from it (``export``).
"""
