# What continuous delivery may do in the cluster, for one identity the cloud maps to a Kubernetes
# user or group (EKS access entry group, GKE Google service account): admin of PEFM's namespace
# (Services, Jobs, Roles, and Flagger's Canary and MetricTemplates through the knative module's
# aggregated ClusterRole), in knative-serving only the config-features ConfigMap the GPU overlay
# applies, and in flagger-system only a read of Flagger's Deployment (CD takes the Prometheus the
# Canary's MetricTemplates query from its -metrics-server when PEFM_PROMETHEUS_URL is not set).
# Nothing cluster-wide: the cluster's add-ons stay Terraform's.
locals {
  subject = {
    kind      = var.subject_kind
    name      = var.subject_name
    api_group = "rbac.authorization.k8s.io"
  }
}

resource "kubernetes_role_binding_v1" "app_admin" {
  metadata {
    name      = "pefm-cd"
    namespace = var.app_namespace
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "ClusterRole"
    name      = "admin"
  }
  subject {
    kind      = local.subject.kind
    name      = local.subject.name
    api_group = local.subject.api_group
  }
}

resource "kubernetes_role_v1" "features" {
  metadata {
    name      = "pefm-cd-features"
    namespace = var.knative_namespace
  }
  rule {
    api_groups     = [""]
    resources      = ["configmaps"]
    resource_names = ["config-features"]
    verbs          = ["get", "patch", "update"]
  }
}

resource "kubernetes_role_binding_v1" "features" {
  metadata {
    name      = "pefm-cd-features"
    namespace = var.knative_namespace
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.features.metadata[0].name
  }
  subject {
    kind      = local.subject.kind
    name      = local.subject.name
    api_group = local.subject.api_group
  }
}

resource "kubernetes_role_v1" "flagger" {
  metadata {
    name      = "pefm-cd-flagger"
    namespace = var.flagger_namespace
  }
  rule {
    api_groups     = ["apps"]
    resources      = ["deployments"]
    resource_names = [var.flagger_deployment]
    verbs          = ["get"]
  }
}

resource "kubernetes_role_binding_v1" "flagger" {
  metadata {
    name      = "pefm-cd-flagger"
    namespace = var.flagger_namespace
  }
  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.flagger.metadata[0].name
  }
  subject {
    kind      = local.subject.kind
    name      = local.subject.name
    api_group = local.subject.api_group
  }
}
