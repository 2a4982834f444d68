"""DUALRec's Streamlit app (placeholder until the app issue lands): `streamlit run app.py`."""

import streamlit as st

st.set_page_config(page_title="DUALRec", page_icon="🎬")
st.title("DUALRec")
st.info("The interactive app is coming. Meanwhile `dualrec data stats` and `dualrec data show --user ID` explore the data.")
