# Optional: the trust GitHub Actions needs to deploy (google-github-actions/auth with
# workload_identity_provider + service_account, then get-gke-credentials). Set github_repository:
# - a workload identity pool and an OIDC provider for token.actions.githubusercontent.com that only
#   accepts tokens of that repository's jobs in environment github_environment (attribute_condition),
# - a service account that only that repository's jobs in environment github_environment may
#   impersonate (principal by subject repo:OWNER/NAME:environment:ENV), with a custom role holding
#   container.clusters.get and container.clusters.connect (no Kubernetes rights through IAM),
# - Kubernetes RBAC for the service account's email (modules/cd-access): admin of namespace pefm.
# The API server must also admit the runner: dns_endpoint = true (IAM-authorized DNS endpoint, the
# workflow's GKE_DNS_ENDPOINT), or its egress range in master_authorized_networks, or a self-hosted
# runner inside the VPC.
locals {
  github_cd      = var.github_repository != null
  github_subject = "repo:${coalesce(var.github_repository, "-")}:environment:${var.github_environment}"
}

resource "google_project_service" "github_cd" {
  for_each           = local.github_cd ? toset(["iamcredentials.googleapis.com", "sts.googleapis.com"]) : toset([])
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

resource "google_iam_workload_identity_pool" "github" {
  count                     = local.github_cd ? 1 : 0
  project                   = var.project_id
  workload_identity_pool_id = "${var.cluster_name}-github"
  display_name              = "GitHub Actions (${var.cluster_name})"
  depends_on                = [google_project_service.github_cd]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  #checkov:skip=CKV_GCP_125:The condition pins the full sub claim (repo:OWNER/NAME:environment:ENV) from github_repository and github_environment, variables checkov does not resolve (the repository has no default).
  count                              = local.github_cd ? 1 : 0
  project                            = var.project_id
  workload_identity_pool_id          = google_iam_workload_identity_pool.github[0].workload_identity_pool_id
  workload_identity_pool_provider_id = "github"
  display_name                       = "token.actions.githubusercontent.com"
  attribute_mapping = {
    "google.subject"        = "assertion.sub"
    "attribute.repository"  = "assertion.repository"
    "attribute.environment" = "assertion.environment"
  }
  attribute_condition = "assertion.sub == '${local.github_subject}'"
  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

resource "google_service_account" "github_cd" {
  count        = local.github_cd ? 1 : 0
  project      = var.project_id
  account_id   = "${var.cluster_name}-github-cd"
  display_name = "GitHub Actions CD of ${var.cluster_name}"
}

resource "google_service_account_iam_member" "github_cd" {
  count              = local.github_cd ? 1 : 0
  service_account_id = google_service_account.github_cd[0].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.github[0].name}/subject/${local.github_subject}"
}

# Fetch the cluster's endpoint and CA (get-credentials) and connect through its DNS endpoint; the
# Kubernetes rights come from RBAC (modules/cd-access), not from IAM.
resource "google_project_iam_custom_role" "github_cd" {
  count       = local.github_cd ? 1 : 0
  project     = var.project_id
  role_id     = "${replace(var.cluster_name, "-", "_")}_github_cd"
  title       = "PEFM CD: reach ${var.cluster_name}"
  permissions = ["container.clusters.get", "container.clusters.connect"]
}

resource "google_project_iam_member" "github_cd" {
  count   = local.github_cd ? 1 : 0
  project = var.project_id
  role    = google_project_iam_custom_role.github_cd[0].name
  member  = "serviceAccount:${google_service_account.github_cd[0].email}"
}

module "cd_access" {
  source = "../../modules/cd-access"
  count  = local.github_cd ? 1 : 0

  subject_kind      = "User"
  subject_name      = google_service_account.github_cd[0].email
  app_namespace     = module.platform.namespace
  flagger_namespace = module.platform.flagger_namespace
  depends_on        = [module.platform] # knative-serving exists once the platform is in
}
