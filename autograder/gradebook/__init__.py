"""What the class gradebook holds and what is written from it: the CSV files (``export``).
"""
