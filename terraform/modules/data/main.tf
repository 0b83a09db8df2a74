# PEFM's database and secrets. Either PostgreSQL + TimescaleDB in the cluster, run by the
# CloudNativePG operator (Helm) as a Cluster resource (cluster.tf), or a managed PostgreSQL whose URL is
# passed in. Either way the owner's URL lands in the pefm-database Secret (key url, read by the
# bootstrap Job alone: the migrator), next to one generated password and URL per component role
# (<component>-password, which the bootstrap Job sets on the role it creates, and <component>-url,
# which that component alone reads), generated API tokens (pefm-tokens), the Ed25519 key pair model
# artifacts are signed with (pefm-signing: private for what trains, public for what loads models) and,
# when asked for, a pull Secret for private ghcr.io packages.
#
# The roles: `pefm bootstrap` creates pefm_<component> as the owner, which needs CREATEROLE. The
# in-cluster owner gets it at initdb (cluster.tf). On a managed database whose URL's user may not
# create roles, creating them is a one-time step for a user who may: `pefm db roles --sql` prints it
# (with PEFM_ROLE_PASSWORD_<COMPONENT> set to the <component>-password keys it sets the passwords
# too); the bootstrap Job then grants each role its tables.
#
# One apply, no CRD needed at plan time: the CNPG custom resources are kubectl_manifest resources
# (alekc/kubectl parses the YAML at plan and only talks to the API server at apply, after the chart
# and its CRDs are in), and the application password is generated here and handed to CNPG in a
# bootstrap Secret, so no data source has to read the <cluster>-app Secret CNPG would create.
locals {
  # managed_database_url is sensitive, and so is anything computed from it: whether it is null says
  # nothing secret, and the database_cluster output (plain in every example) is derived from it.
  in_cluster = nonsensitive(var.managed_database_url == null)
  database_url = (
    local.in_cluster
    ? "postgresql://${local.database_user}:${random_password.database.result}@${local.rw_host}:5432/${local.database_name}?sslmode=require"
    : var.managed_database_url
  )
  pull_secret = var.registry_username != null

  # The component roles `pefm bootstrap` creates (pefm.storage.roles.COMPONENTS), one URL each: the
  # owner's URL with the role's user:password@ in place of the owner's (whatever the managed URL had).
  components = ["ingest", "inference", "monitor", "rollout", "dashboard", "trainer"]
  url_parts = (
    local.in_cluster
    ? ["postgresql://", "${local.rw_host}:5432/${local.database_name}?sslmode=require"]
    : regex("^(postgres(?:ql)?://)(?:[^@/?#]*@)?(.+)$", var.managed_database_url)
  )
  role_urls = {
    for c in local.components : c => "${local.url_parts[0]}pefm_${c}:${random_password.role[c].result}@${local.url_parts[1]}"
  }
  # PEFM_VERIFY_KEYS: the signing key's public key first, then those of earlier signing keys.
  verify_keys = join(",", concat([trimspace(tls_private_key.signing.public_key_pem)], var.previous_verify_keys))
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

# Letters and digits only: the passwords go into the role URLs as they are.
resource "random_password" "role" {
  for_each = toset(local.components)
  length   = 32
  special  = false
}

resource "kubernetes_secret_v1" "database" {
  metadata {
    name      = "pefm-database"
    namespace = kubernetes_namespace_v1.pefm.metadata[0].name
  }
  data = merge(
    { url = local.database_url },
    { for c in local.components : "${c}-url" => local.role_urls[c] },
    { for c in local.components : "${c}-password" => random_password.role[c].result },
  )
}

# The artifact signing key (PEFM_SIGNING_KEY of the bootstrap Job, the retrain CronJobs and CD's
# Jobs) and the public keys the inference revisions, the monitor, the rollout API, the retrain
# CronJobs and CD's Jobs accept (PEFM_VERIFY_KEYS; the Jobs gate against the serving model): the
# generated one, then previous_verify_keys while a rotation retires the models signed before it.
# The private key lives in the Terraform state, like every other secret here: keep the state private.
resource "tls_private_key" "signing" {
  algorithm = "ED25519"
}

resource "kubernetes_secret_v1" "signing" {
  metadata {
    name      = "pefm-signing"
    namespace = kubernetes_namespace_v1.pefm.metadata[0].name
  }
  data = {
    private = tls_private_key.signing.private_key_pem_pkcs8
    public  = local.verify_keys
  }
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

# The cache (knative/cache, applied with `kubectl apply -k knative/cache`): the Valkey server's
# password, the URL the inference revisions and ingest reach it at, and the key only the inference
# revisions read, which tag every entry they keep there. Made only with deploy_cache: the functions
# take a URL here to mean the cache runs, and with no server behind it they would cache nothing and
# limit no rate (a failed lookup every 2 s) instead of caching in their own memory.
resource "random_password" "cache" {
  count   = var.deploy_cache ? 1 : 0
  length  = 40
  special = false
}

resource "random_password" "cache_entry_key" {
  count   = var.deploy_cache ? 1 : 0
  length  = 64
  special = false
}

resource "kubernetes_secret_v1" "cache" {
  count = var.deploy_cache ? 1 : 0
  metadata {
    name      = "pefm-cache"
    namespace = kubernetes_namespace_v1.pefm.metadata[0].name
  }
  data = {
    password    = random_password.cache[0].result
    "entry-key" = random_password.cache_entry_key[0].result
    url         = "redis://:${random_password.cache[0].result}@pefm-cache.${kubernetes_namespace_v1.pefm.metadata[0].name}.svc.cluster.local:6379/0"
  }
}

# MLflow (knative/tracking): its backend store is a database of its own, mlflow, owned by role
# pefm_mlflow. In the cluster CNPG makes both (the Cluster's managed role, a Database resource); with
# a managed database they are a one-time step for its administrator, and mlflow_backend_store_uri
# names the result. Secret pefm-mlflow holds the URL MLflow's Deployment reads.
resource "random_password" "mlflow" {
  length  = 40
  special = false
}

resource "kubernetes_secret_v1" "mlflow_role" {
  count = local.in_cluster ? 1 : 0
  metadata {
    name      = local.mlflow_role_secret
    namespace = kubernetes_namespace_v1.database[0].metadata[0].name
    labels    = { "cnpg.io/reload" = "true" }
  }
  type = "kubernetes.io/basic-auth"
  data = {
    username = "pefm_mlflow"
    password = random_password.mlflow.result
  }
}

resource "kubectl_manifest" "mlflow_database" {
  count             = local.in_cluster ? 1 : 0
  yaml_body         = yamlencode(local.mlflow_database)
  server_side_apply = true
  depends_on        = [kubectl_manifest.cluster, kubernetes_secret_v1.mlflow_role]
}

resource "kubernetes_secret_v1" "mlflow" {
  count = local.in_cluster || var.mlflow_backend_store_uri != null ? 1 : 0
  metadata {
    name      = "pefm-mlflow"
    namespace = kubernetes_namespace_v1.pefm.metadata[0].name
  }
  data = {
    backend-store-uri = (
      local.in_cluster
      ? "postgresql://pefm_mlflow:${random_password.mlflow.result}@${local.rw_host}:5432/mlflow?sslmode=require"
      : var.mlflow_backend_store_uri
    )
  }
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
