# PEFM's database and secrets: TimescaleDB in the cluster (the timescaledb-single Helm chart, TLS
# on, generated passwords) or a managed PostgreSQL whose URL is passed in; either way the URL
# lands in the pefm-database Secret the Knative Services read, next to generated API tokens.
locals {
  in_cluster = var.managed_database_url == null
  release    = "timescaledb"
  database_url = (
    local.in_cluster
    ? "postgresql://postgres:${random_password.database.result}@${local.release}.${var.timescaledb_namespace}.svc.cluster.local:5432/postgres?sslmode=require"
    : var.managed_database_url
  )
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

resource "random_password" "replication" {
  length  = 32
  special = false
}

resource "helm_release" "timescaledb" {
  count            = local.in_cluster ? 1 : 0
  name             = local.release
  repository       = "https://charts.timescale.com"
  chart            = "timescaledb-single"
  version          = var.timescaledb_chart_version
  namespace        = var.timescaledb_namespace
  create_namespace = true

  values = [yamlencode({
    replicaCount = 1
    persistentVolumes = {
      data = { size = var.timescaledb_storage_size }
    }
  })]

  set_sensitive {
    name  = "secrets.credentials.PATRONI_SUPERUSER_PASSWORD"
    value = random_password.database.result
  }
  set_sensitive {
    name  = "secrets.credentials.PATRONI_REPLICATION_PASSWORD"
    value = random_password.replication.result
  }
}

resource "kubernetes_secret_v1" "database" {
  metadata {
    name      = "pefm-database"
    namespace = kubernetes_namespace_v1.pefm.metadata[0].name
  }
  data = { url = local.database_url }
}

resource "random_password" "token" {
  for_each = toset(["ingest", "admin", "webhook"])
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
