"""Visualisation (extra ``viz``: matplotlib; graphviz's ``dot`` when installed). Reads results only."""

from .graph import GraphView, graph_view, top_k_view, write_graph
from .heatmap import heatmap_png, relevance_map, save_image_heatmap
from .tokens import generation_html, tokens_ansi, tokens_html, visualize_tokenwise_relevance_map

__all__ = ["GraphView", "graph_view", "top_k_view", "write_graph", "heatmap_png", "relevance_map",
           "save_image_heatmap", "tokens_html", "tokens_ansi", "generation_html",
           "visualize_tokenwise_relevance_map"]
