# PEFM's database and secrets. Either PostgreSQL + TimescaleDB in the cluster, run by the
# CloudNativePG operator (Helm) as a Cluster resource (cluster.tf), or a managed PostgreSQL whose URL is
# passed in. Either way the URL lands in the pefm-database Secret the Knative Services read, next to
# generated API tokens (pefm-tokens) and, when asked for, a pull Secret for private ghcr.io packages.
#
# One apply, no CRD needed at plan time: the CNPG custom resources are kubectl_manifest resources
# (alekc/kubectl parses the YAML at plan and only talks to the API server at apply, after the chart
# and its CRDs are in), and the application password is generated here and handed to CNPG in a
# bootstrap Secret, so no data source has to read the <cluster>-app Secret CNPG would create.
locals {
  in_cluster = var.managed_database_url == null
  database_url = (
    local.in_cluster
    ? "postgresql://${local.database_user}:${random_password.database.result}@${local.rw_host}:5432/${local.database_name}?sslmode=require"
    : var.managed_database_url
  )
  pull_secret = var.registry_username != null
}

resource "kubernetes_namespace_v1" "pefm" {
  metadata {
    name = var.namespace
    labels = {
      "pod-security.kubernetes.io/enforce" = "baseline"
      "pod-security.kubernetes.io/warn"    = "restricted"
      "pod-security.kubernetes.io/audit"   = "restricted"
    }
  }
}

resource "random_password" "database" {
  length  = 32
  special = false
}

resource "helm_release" "cnpg" {
  count            = local.in_cluster && var.install_cnpg_operator ? 1 : 0
  name             = "cnpg"
  repository       = "https://cloudnative-pg.github.io/charts"
  chart            = "cloudnative-pg"
  version          = var.cnpg_chart_version
  namespace        = var.cnpg_namespace
  create_namespace = true
  wait             = true # the operator's admission webhooks must answer before a Cluster is created

  values = [yamlencode({
    crds   = { create = true }
    config = { clusterWide = true }
  })]
}

resource "kubernetes_namespace_v1" "database" {
  count = local.in_cluster ? 1 : 0
  metadata {
    name = var.database_namespace
    labels = {
      "pod-security.kubernetes.io/enforce" = "baseline"
      "pod-security.kubernetes.io/warn"    = "restricted"
      "pod-security.kubernetes.io/audit"   = "restricted"
    }
  }
}

# The owner role's credentials for initdb (CNPG requires a basic-auth Secret whose username is the owner).
resource "kubernetes_secret_v1" "database_bootstrap" {
  count = local.in_cluster ? 1 : 0
  metadata {
    name      = local.bootstrap_secret
    namespace = kubernetes_namespace_v1.database[0].metadata[0].name
    labels    = { "cnpg.io/reload" = "true" }
  }
  type = "kubernetes.io/basic-auth"
  data = {
    username = local.database_user
    password = random_password.database.result
  }
}

resource "kubectl_manifest" "image_catalog" {
  count             = local.in_cluster ? 1 : 0
  yaml_body         = yamlencode(local.image_catalog)
  server_side_apply = true
  depends_on        = [helm_release.cnpg, kubernetes_namespace_v1.database]
}

resource "kubectl_manifest" "cluster" {
  count             = local.in_cluster ? 1 : 0
  yaml_body         = yamlencode(local.cluster)
  server_side_apply = true
  depends_on        = [kubectl_manifest.image_catalog, kubernetes_secret_v1.database_bootstrap]
}

resource "kubectl_manifest" "scheduled_backup" {
  count             = local.in_cluster && var.database_backup != null ? 1 : 0
  yaml_body         = yamlencode(local.scheduled_backup)
  server_side_apply = true
  depends_on        = [kubectl_manifest.cluster]
}

resource "kubernetes_secret_v1" "database" {
  metadata {
    name      = "pefm-database"
    namespace = kubernetes_namespace_v1.pefm.metadata[0].name
  }
  data = { url = local.database_url }
}

resource "random_password" "token" {
  for_each = toset(["ingest", "admin", "webhook", "shadow"])
  length   = 40
  special  = false
}

resource "kubernetes_secret_v1" "tokens" {
  metadata {
    name      = "pefm-tokens"
    namespace = kubernetes_namespace_v1.pefm.metadata[0].name
  }
  data = { for name, token in random_password.token : name => token.result }
}

# Pull Secret for private ghcr.io packages: reference it from the ServiceAccounts the pods run as
# (see terraform/README.md); public packages need none.
resource "kubernetes_secret_v1" "registry" {
  count = local.pull_secret ? 1 : 0
  metadata {
    name      = var.image_pull_secret_name
    namespace = kubernetes_namespace_v1.pefm.metadata[0].name
  }
  type = "kubernetes.io/dockerconfigjson"
  data = {
    ".dockerconfigjson" = jsonencode({
      auths = {
        (var.registry_server) = {
          username = var.registry_username
          password = var.registry_token
          auth     = base64encode("${var.registry_username}:${var.registry_token}")
        }
      }
    })
  }

  lifecycle {
    precondition {
      condition     = var.registry_token != null
      error_message = "registry_username is set but registry_token is not: the pull Secret needs both."
    }
  }
}
