"""The Streamlit app's glue: state, tables, side-by-side runs, streaming, recordings and figures (views: app_pages/)."""
