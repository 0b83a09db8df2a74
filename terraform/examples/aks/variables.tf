variable "subscription_id" {
  type        = string
  description = "Azure subscription."
}

variable "location" {
  type        = string
  description = "Azure region, e.g. westeurope (pick one that offers the GPU VM size)."
}

variable "cluster_name" {
  type        = string
  description = "Name of the AKS cluster, its resource group and its virtual network."
  default     = "pefm"
}

variable "api_server_authorized_ip_ranges" {
  type        = list(string)
  description = "CIDRs allowed to reach the API server (the machine running Terraform must be in one)."
}

variable "admin_group_object_ids" {
  type        = list(string)
  description = "Entra ID groups given cluster-admin besides the identity running Terraform."
  default     = []
}

variable "managed_database_url" {
  type        = string
  description = "postgresql:// URL of a managed PostgreSQL (Azure Database for PostgreSQL); null runs PostgreSQL + TimescaleDB in the cluster (CloudNativePG)."
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

variable "github_repository" {
  type        = string
  description = "OWNER/NAME of the GitHub repository whose CD deploys to this cluster: creates the federated identity (cd.tf). null: none."
  default     = null
}

variable "github_environment" {
  type        = string
  description = "GitHub Actions environment of the deploying jobs; only their tokens (subject repo:OWNER/NAME:environment:ENV) are trusted."
  default     = "production"
}

variable "deploy_cache" {
  type        = bool
  description = "Whether you apply knative/cache (the shared Valkey cache): false when you skip it, so that no Secret pefm-cache points the functions at a cache that is not there."
  default     = true
}
