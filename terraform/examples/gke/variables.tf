variable "project_id" {
  type        = string
  description = "Google Cloud project."
}

variable "region" {
  type        = string
  description = "Region of the (regional) cluster, e.g. europe-west4 (pick one that offers the GPU type)."
}

variable "cluster_name" {
  type        = string
  description = "Name of the GKE cluster."
  default     = "pefm"
}

variable "network" {
  type        = string
  description = "VPC network of the cluster."
  default     = "default"
}

variable "subnetwork" {
  type        = string
  description = "Subnetwork of the nodes (in region)."
  default     = "default"
}

variable "master_authorized_networks" {
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  description = "CIDRs allowed to reach the API server (the machine running Terraform must be in one)."
}

variable "managed_database_url" {
  type        = string
  description = "postgresql:// URL of a managed PostgreSQL (Cloud SQL); null runs PostgreSQL + TimescaleDB in the cluster (CloudNativePG)."
  default     = null
  sensitive   = true
}

variable "domain" {
  type        = string
  description = "DNS domain of the Knative routes; null keeps Knative's default."
  default     = null
}

variable "registry_username" {
  type        = string
  description = "Owner of PEFM's private ghcr.io packages; with registry_token an image pull Secret is created in namespace pefm. null: the packages are public."
  default     = null
}

variable "registry_token" {
  type        = string
  description = "Token with read:packages for registry_username (set it with TF_VAR_registry_token, not in a file)."
  default     = null
  sensitive   = true
}

variable "dns_endpoint" {
  type        = bool
  description = "Open the control plane's DNS endpoint (IAM-authorized, no CIDR list): what lets GitHub-hosted CD runners reach the cluster (the workflow's GKE_DNS_ENDPOINT)."
  default     = false
}

variable "github_repository" {
  type        = string
  description = "OWNER/NAME of the GitHub repository whose CD deploys to this cluster: creates the workload identity federation (cd.tf). null: none."
  default     = null
}

variable "github_environment" {
  type        = string
  description = "GitHub Actions environment of the deploying jobs; only their tokens (sub repo:OWNER/NAME:environment:ENV) may impersonate the CD service account."
  default     = "production"
}

variable "deploy_cache" {
  type        = bool
  description = "Whether you apply knative/cache (the shared Valkey cache): false when you skip it, so that no Secret pefm-cache points the functions at a cache that is not there."
  default     = true
}
