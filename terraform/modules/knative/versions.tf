terraform {
  required_version = ">= 1.6.0"

  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.35"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "~> 2.17"
    }
    kubectl = {
      source = "alekc/kubectl"
      # 2.1.2: wait_for sees a condition already true when the watch starts (2.1.1) and requires all
      # of them (2.1.2); 2.1.0 stopped at the first change.
      version = "~> 2.1, >= 2.1.2"
    }
    http = {
      source  = "hashicorp/http"
      version = "~> 3.4"
    }
  }
}
