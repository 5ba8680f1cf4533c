"""The Streamlit evaluation dashboard."""
