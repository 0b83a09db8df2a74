# Prometheus and Grafana from kube-prometheus-stack, plus a PodMonitor that scrapes every PEFM
# revision pod: the app's /metrics on the user container (pefm_requests_total and
# pefm_request_duration_seconds, which `pefm rollout` queries per revision) and queue-proxy's.
locals {
  release = "kube-prometheus-stack"
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
    prometheus = {
      prometheusSpec = {
        retention                               = var.retention
        podMonitorSelectorNilUsesHelmValues     = false
        serviceMonitorSelectorNilUsesHelmValues = false
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
      podMetricsEndpoints = [
        { port = "user-port", path = "/metrics" },
        { port = "http-usermetric", path = "/metrics" },
      ]
    }
  })
  depends_on = [helm_release.stack]
}
