"""Data tools: the synthetic articulated-object generator (`python -m data_tools.synthetic`) and dataset helpers.

Nothing is imported here, so that importing a light helper of this package never pulls in Open3D.
"""
