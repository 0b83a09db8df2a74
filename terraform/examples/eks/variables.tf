variable "region" {
  type        = string
  description = "AWS region."
}

variable "availability_zones" {
  type        = list(string)
  description = "Three availability zones of the region for the VPC's subnets, e.g. [\"eu-west-1a\", \"eu-west-1b\", \"eu-west-1c\"]."

  validation {
    condition     = length(var.availability_zones) == 3
    error_message = "Name exactly three zones: the VPC has one private and one public subnet in each."
  }
}

variable "cluster_name" {
  type        = string
  description = "Name of the EKS cluster and its VPC."
  default     = "pefm"
}

variable "endpoint_public_access_cidrs" {
  type        = list(string)
  description = "CIDRs allowed to reach the API endpoint (the machine running Terraform must be in one)."
}

variable "managed_database_url" {
  type        = string
  description = "postgresql:// URL of an RDS PostgreSQL; null runs PostgreSQL + TimescaleDB in the cluster (CloudNativePG)."
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
  description = "OWNER/NAME of the GitHub repository whose CD deploys to this cluster: creates the OIDC trust (cd.tf). null: none."
  default     = null
}

variable "github_environment" {
  type        = string
  description = "GitHub Actions environment of the deploying jobs; only their tokens (sub repo:OWNER/NAME:environment:ENV) are trusted."
  default     = "production"
}

variable "github_oidc_provider_arn" {
  type        = string
  description = "ARN of the account's existing IAM OIDC provider for token.actions.githubusercontent.com; null creates it (an account holds one per URL)."
  default     = null
}

variable "deploy_cache" {
  type        = bool
  description = "Whether you apply knative/cache (the shared Valkey cache): false when you skip it, so that no Secret pefm-cache points the functions at a cache that is not there."
  default     = true
}
