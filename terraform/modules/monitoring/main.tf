# Prometheus and Grafana from kube-prometheus-stack. Two ways into PEFM's pods:
# - a scrape job for the pods of app_namespace annotated prometheus.io/scrape: "true" (the Knative
#   revisions and the rollout API), at their prometheus.io/port and prometheus.io/path (8080, /metrics):
#   pefm_requests_total and pefm_request_duration_seconds, which the Canary's MetricTemplates and
#   `pefm rollout` query per revision. kube-prometheus-stack ignores these annotations by itself.
# - a PodMonitor for the Knative queue-proxy's own metrics (port http-usermetric) of every revision.
locals {
  release = "kube-prometheus-stack"

  annotated_pods = {
    job_name = "pefm-annotated-pods"
    # the canary's metrics windows are 60 s (Flagger's MetricTemplates): at the operator's default
    # of 30 s one missed scrape left no increase() at all, read as "served nothing" (a pass)
    scrape_interval = "10s"
    kubernetes_sd_configs = [{
      role       = "pod"
      namespaces = { names = [var.app_namespace] }
    }]
    relabel_configs = [
      { source_labels = ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], regex = "true", action = "keep" },
      { source_labels = ["__meta_kubernetes_pod_phase"], regex = "Pending|Succeeded|Failed", action = "drop" },
      { source_labels = ["__meta_kubernetes_pod_annotation_prometheus_io_path"], regex = "(.+)", target_label = "__metrics_path__", action = "replace" },
      {
        # every container port of a pod yields a target: all are rewritten to the annotated port,
        # and Prometheus keeps one of the identical targets
        source_labels = ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"]
        regex         = "([^:]+)(?::\\d+)?;(\\d+)"
        replacement   = "$1:$2"
        target_label  = "__address__"
        action        = "replace"
      },
      { source_labels = ["__meta_kubernetes_namespace"], target_label = "namespace", action = "replace" },
      { source_labels = ["__meta_kubernetes_pod_name"], target_label = "pod", action = "replace" },
      { source_labels = ["__meta_kubernetes_pod_label_serving_knative_dev_revision"], target_label = "knative_revision", action = "replace" },
    ]
  }
}

resource "random_password" "grafana" {
  length  = 32
  special = false
}

resource "helm_release" "stack" {
  name             = local.release
  repository       = "https://prometheus-community.github.io/helm-charts"
  chart            = "kube-prometheus-stack"
  version          = var.chart_version
  namespace        = var.namespace
  create_namespace = true

  values = [yamlencode({
    # PEFM's alerts, the same file docker compose's Prometheus loads (a PrometheusRule of the release)
    additionalPrometheusRulesMap = { pefm = yamldecode(file("${path.module}/../../../deploy/prometheus/alerts.yml")) }
    prometheus = {
      prometheusSpec = {
        retention                               = var.retention
        podMonitorSelectorNilUsesHelmValues     = false
        serviceMonitorSelectorNilUsesHelmValues = false
        additionalScrapeConfigs                 = [local.annotated_pods]
        storageSpec = {
          volumeClaimTemplate = {
            spec = merge(
              {
                accessModes = ["ReadWriteOnce"]
                resources   = { requests = { storage = var.storage_size } }
              },
              var.storage_class == null ? {} : { storageClassName = var.storage_class },
            )
          }
        }
      }
    }
  })]

  set_sensitive {
    name  = "grafana.adminPassword"
    value = random_password.grafana.result
  }
}

resource "kubectl_manifest" "pefm_pods" {
  yaml_body = yamlencode({
    apiVersion = "monitoring.coreos.com/v1"
    kind       = "PodMonitor"
    metadata   = { name = "pefm-revisions", namespace = var.namespace }
    spec = {
      namespaceSelector = { matchNames = [var.app_namespace] }
      selector = {
        matchExpressions = [{ key = "serving.knative.dev/service", operator = "Exists" }]
      }
      # the user container's /metrics comes through the annotated-pods job: scraping it here
      # too would count every request twice
      podMetricsEndpoints = [
        { port = "http-usermetric", path = "/metrics" },
      ]
    }
  })
  depends_on = [helm_release.stack]
}
