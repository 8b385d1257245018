"""Tests of the deployment: Helm chart, images, Prometheus rules and dashboard."""
