"""The farm's web service: the overview page at http://HOST/ and what it asks for."""
