"""Application servers of the IMS network (CPM/RCS messaging AS)."""
